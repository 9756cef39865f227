"""Readers, phantom generator and datalist builder for the figshare brain tumour dataset."""
