"""Python Zaqar's WSGI app for gunicorn, reading the config file named by BENCH_ZAQAR_CONF.

zaqar.transport.wsgi.app does the same but only reads oslo.config's default paths (/etc/zaqar, ~/.zaqar),
which a benchmark should not write to.
"""
import os

from oslo_config import cfg
from oslo_log import log

from zaqar import bootstrap
from zaqar.common import consts

CONF = cfg.CONF
log.register_options(CONF)
CONF(project="zaqar", prog="zaqar-queues", args=["--config-file", os.environ["BENCH_ZAQAR_CONF"]])
log.setup(CONF, "zaqar")
_boot = bootstrap.Bootstrap(CONF)
CONF.drivers.transport = consts.TRANSPORT_WSGI
application = _boot.transport.app
