"""p2p_lib: pix2pix from scratch. Most modules are generated from the lessons (see each file's header);
the rest is plumbing no lesson teaches (paths, download, checkdata, combine, checkpoint, engine, evaluate, official, cli)."""
from p2p_lib.paths import DatasetNotFoundError, dataset_dir, facades_dir
from p2p_lib.blocks import *  # lesson 01
from p2p_lib.unet import *  # lesson 02
from p2p_lib.patchgan import *  # lesson 03
from p2p_lib.losses import *  # lesson 04
from p2p_lib.data import *  # lesson 05
from p2p_lib.train import *  # lesson 06
from p2p_lib.metrics import *  # lesson 07
from p2p_lib.inference import *  # lesson 07

__version__ = "0.1.0"
