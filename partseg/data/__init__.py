"""Data: the built-in faces domain, the data-set layout, sample records and annotation formats."""
