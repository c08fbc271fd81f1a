"""bertcli: pretrain BERT from raw text (tokenize, make-data, pretrain, eval)."""

__version__ = "0.1.0"
