"""Modality adapters: rows -> views + encoders. See ``domains.base`` for the contract."""
