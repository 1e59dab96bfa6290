"""trtq.precision"""
