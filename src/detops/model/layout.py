"""Layout of the detector's raw output `[B, N, 5 + C]`, shared by torch and the torch-free inference path."""

BOX_SLICE = slice(0, 4)  # x1, y1, x2, y2 in input pixels
CENTERNESS = 4  # centerness logit
FIRST_CLASS = 5  # then C class logits
PRE_NMS_TOP_K = 1000  # candidates per image kept before NMS: bounds NMS cost on an untrained model
