"""Files shipped inside the package: ``demo.mp4``, the clip ``framebroker demo`` runs on, and
``NOTICE``, its origin and licence (it is cut from OpenCV's ``vtest.avi`` by
``scripts/make_demo_clip.py``). A package, so ``importlib.resources`` can find them.
"""
