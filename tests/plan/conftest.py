import sys
from pathlib import Path

# The HostState builders in hosts.py are imported by name from every test here.
sys.path.insert(0, str(Path(__file__).parent))
