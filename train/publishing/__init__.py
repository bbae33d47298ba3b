"""What a finished run leaves behind, and where it goes.

- ``model_folder``: ``save_model_folder`` (weights, config, processor, remote code, metrics, card; a LoRA run's
  adapter and, with ``--merge_lora``, the merged model);
- ``model_card``: the card, filled from what the run actually used (provenance, protocol, results);
- ``hub``: ``--push_to_hub``: the folder to the Hugging Face Hub in one commit;
- ``lora``: ``--lora``: PEFT adapters for fine-tuning a released model on in-house data.
"""
