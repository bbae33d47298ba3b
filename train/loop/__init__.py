"""The training loop of ``train/vqa.py`` and ``train/classify.py``: the paper's protocol on top of Accelerate.

- ``arguments``: the protocol's command-line arguments and the quick-start step budget;
- ``config_overrides``: ``--config_overrides key=value,...`` applied to a model config;
- ``protocol``: early stopping and the plateau learning-rate schedule;
- ``reproducibility``: seeding and the (seed, epoch) sampler that make a resumed run exact;
- ``checkpoints``: the loop's state beside ``accelerator.save_state``;
- ``trainer``: ``make_accelerator`` and ``TrainingLoop``.
"""
