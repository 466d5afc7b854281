"""Images made by gradient ascent: objectives, parameterizations and transforms, the one render
loop, activation maximization and network inversion."""
