"""cytoops: can a cell image predict what cytokines the cells secrete?"""

__version__ = "0.1.0"
