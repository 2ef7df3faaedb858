"""Training data: the publishers' data-set layouts, bag-derived targets, and tensor-level augmentation.

``datasets`` reads Cityscapes, DELIVER, FMB, DSEC and the generic folder layout through the
runtime's one preprocessing path (``madm_ros.preprocessing``); ``augment`` crops and flips
image/label pairs; ``mixing`` holds ClassMix and the photometric augmentations on network
tensors; ``rare_class`` is DAFormer's rare-class sampling; ``bag_target`` turns a rosbag2 topic
into a folder data set through the nodes' own decoding.
"""
