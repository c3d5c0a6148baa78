"""ptsd_bidsapp.dcm"""
