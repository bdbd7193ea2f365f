"""The labelling loop: selection of images worth labelling, the Label Studio round trip, the label audit."""
