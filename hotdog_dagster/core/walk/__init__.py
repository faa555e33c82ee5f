"""The ordered walk: a greedy nearest-neighbour tour through a filtered set of images, made
smoother, rendered as an animation. ``select`` picks the images with the search engine, ``tour``
orders them exactly and fast, ``improve`` shortens the path, ``render`` draws it, ``definition``
saves named walks beside the data, ``build`` runs a named walk end to end for the asset layer."""
