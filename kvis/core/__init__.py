"""The foundation every technique stands on: the replayed graph and the questions it answers, model
loading and facts, preprocessing, images, the compiled-pass runner, progress, files and errors."""
