"""ptsd_bidsapp.group"""
