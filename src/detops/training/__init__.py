"""Lightning training of the detector: data, augmentation, the LightningModule, callbacks, inference."""
