"""Model sources: every form a model is shipped in, loaded safely and adapted to [0,1] pixel space.

* :mod:`.architectures`: names: the zoo, ``torchvision:NAME``, ``timm:NAME`` (the families in :mod:`.families`);
* :mod:`.checkpoints`: the project's checkpoint format;
"""
