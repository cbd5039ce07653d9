"""Method families, one module each; import the one you need
(``from tljax.methods import finetune``).

Every module is pure: models specific to the family, losses
``<name>_loss(params, state, batch, rng, *, axis_name=None) -> (loss,
metrics)``, ``make_step(model, tx, **settings)`` returning the step
``step(state, batch, rng, *, axis_name=None) -> (state, metrics)``, and
evaluation functions that return numbers. No module here prints, plots,
writes files or loads orbax; the experiments around them are in
:mod:`tljax.drivers`.

=================  ==========================================================
supervised         cross-entropy, the loss every transfer method starts from
finetune           layer transfer, freezing, per-layer rates, gradual
                   unfreezing, L2-SP, LwF
features           cached backbone features and a linear probe on them
distillation       a student learning from a teacher's soft targets
multitask          one trunk, one head per task
domain_adaptation  DANN, MMD (DAN), deep CORAL, importance-weighted source
tca, kmm           closed forms: transfer component analysis and joint
                   distribution adaptation (TCA, JDA), kernel mean matching
                   weights
metric_learning    Siamese (contrastive) and triplet networks; retrieval
protonet, maml,    few-shot learners on episodes: prototypical networks,
hypernet           MAML, a generated-head (model-based) learner
zero_shot          attribute prediction (DAP), joint embeddings (ALE)
progressive        progressive nets: frozen columns, lateral adapters
self_taught        autoencoder features from unlabelled data; clustering
=================  ==========================================================
"""
