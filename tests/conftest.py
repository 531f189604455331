import os
import sys

# numpy_reference.py and other test helpers are imported by name.
sys.path.insert(0, os.path.dirname(__file__))
