"""edgeway.discovery"""
