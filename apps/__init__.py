"""emvision for the lab: the `emvision` command, batch prediction, question answering, explanations, a demo app.

- ``cli``: the `emvision` console command (`predict`, `ask`, `demo`, and aliases of the data and training scripts);
- ``models``: a saved classifier (HNF, or MVaEMa zero-shot) and a saved assistant (MVaEMa) behind two small classes;
- ``predict``: one row per micrograph of files, folders, globs and archives, resumable;
- ``infobar``: what the information bar and the file's metadata say (crop box, bar height, pixel size);
- ``explain``: where a model looked (HNF: gradient saliency; MVaEMa: the answer's cross-attention);
- ``demo``: a Gradio app over all of these (optional extra ``emvision[demo]``).

This layer sits on top like ``train/``: it may import every layer, and nothing imports it.
"""
