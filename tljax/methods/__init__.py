from tljax.methods.kmm import kmm_weights
from tljax.methods.tca import TCA
