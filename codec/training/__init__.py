"""The tools that learn weights from photos, one module each (`python -m codec.training.<tool>`):
`correction` (the learned latent correction), `thumbnail_decoder` (the fine-tuned thumbnail
decoder) and `preview` (the preview map). `data` prepares the photos they learn from,
`command` is their shared command line, `descent` the gradient descent of the two that train.
"""
