"""Where the evidence for a target lies in an image: the Explanation result, gradient methods, the
CAM family, occlusion, the attention() registry and the sanity check."""
