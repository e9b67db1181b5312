"""edgeway.saga"""
