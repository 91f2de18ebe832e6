"""llmsight: the command line (`llmsight --help`); the libraries are backbones, visiondata, spae and lens."""
