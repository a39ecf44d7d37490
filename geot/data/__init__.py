"""From scans to training samples: features, canonical frame, sampling, augmentation, splits, synthetic jaws."""
