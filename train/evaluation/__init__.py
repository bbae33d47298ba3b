"""Test-fold evaluation shared by the training scripts, gathered across processes.

- ``vqa``: ``evaluate_vqa`` (MVaEMa answers the test questions; BLEU-2/4, ROUGE-1/2/L, METEOR);
- ``zero_shot``: ``evaluate_zero_shot`` (MVaEMa ranks the class names for every test-fold image);
- ``classifier``: ``evaluate_classifier`` (an image classifier's Top-1/Top-5, per-class P/R/F1, macro-F1
  and confusion matrix, json + png);
- ``progress``: the progress bar of the evaluation loaders.
"""
