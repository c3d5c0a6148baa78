"""ptsd_bidsapp.workflows"""
