"""Where a training run's rows come from and how they become batches.

- ``sources``: ``--dataset`` and the other data arguments, ``resolve_dataset`` (synthetic set, built folder,
  in-house folder or archive, Hub id) and the dataset's class descriptions;
- ``splits``: the fold split of a run;
- ``collators``: rows -> model inputs (``VQACollator``, ``ImageCollator``).
"""
