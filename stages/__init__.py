"""The three detection stages as plain Python: no Django, no Dramatiq.

preprocess_video -> run_inference -> postprocess_detections, joined by files in a work folder
(see stages/framestore.py for the inter-stage format). Each stage takes a ``progress`` callback
``progress(done, total)``; the caller may raise from it (for example to cancel) and the stage stops
at that batch boundary.
"""
