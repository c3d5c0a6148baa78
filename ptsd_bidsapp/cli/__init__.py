"""ptsd_bidsapp.cli"""
