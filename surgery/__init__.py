"""trtq.surgery"""
