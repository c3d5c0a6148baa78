"""ptsd_bidsapp.reports"""
