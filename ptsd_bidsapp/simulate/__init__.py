"""ptsd_bidsapp.simulate"""
