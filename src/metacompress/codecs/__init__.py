"""Codecs: the thesis' neural codecs (COIN, COIN++) and the classical ones they are compared with."""
