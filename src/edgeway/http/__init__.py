"""edgeway.http"""
