"""COCO mAP evaluation and the plots people look at before they read numbers."""
