"""edgeway.service"""
