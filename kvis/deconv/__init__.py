"""The Zeiler & Fergus deconvnet and the backward rules it shares with saliency and guided
backpropagation."""
