"""Models: the OpenCLIP encoder and its preprocessing, the sketch world and its shipped model, embedding."""
