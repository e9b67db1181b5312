"""edgeway.gateway"""
