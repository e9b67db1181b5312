"""edgeway.observability"""
