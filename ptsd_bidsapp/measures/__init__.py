"""ptsd_bidsapp.measures"""
