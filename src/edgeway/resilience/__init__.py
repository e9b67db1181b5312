"""edgeway.resilience"""
