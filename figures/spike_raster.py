NAME = "spike_raster"
from .inputs import SkipFigure
def make(runs, out):
    raise SkipFigure("not written yet")
