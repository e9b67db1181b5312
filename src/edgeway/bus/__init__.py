"""edgeway.bus"""
