"""Hub release: the exported folder and its model card (export.py, with the card templates model_card.md and
reader_card.md), and the Inference Endpoints handler it ships as handler.py (endpoint_handler.py)."""
