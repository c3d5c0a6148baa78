"""ptsd_bidsapp.bids"""
