"""Data sources by name (image folders decoded lazily), batch iterators,
episodes."""

from tljax.data.batching import batch_indices
from tljax.data.batching import batches
from tljax.data.batching import eval_batches
from tljax.data.batching import local_batch_indices
from tljax.data.batching import num_examples
from tljax.data.images import ImageArray
from tljax.data.sources import Dataset
from tljax.data.sources import load
from tljax.data.sources import load_attributes

__all__ = ["Dataset", "ImageArray", "load", "load_attributes", "batches",
           "batch_indices", "local_batch_indices", "num_examples",
           "eval_batches"]
