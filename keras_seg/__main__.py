from keras_seg.cli import run

run()
