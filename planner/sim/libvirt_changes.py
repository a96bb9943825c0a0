"""What a read-write session on a simulated host's libvirt changed since its last commit,
so that the commit reads back only that (listing every domain and volume at each commit
made an apply cost O(domains²): one commit per hostdev attached).

The session's connection, and every domain, pool, network and volume it hands out, get
subclasses (``planner.sim.libvirt_faults`` makes them) whose public methods, all but the
read-only ones named here, mark what they act on, before the call and again after it:
a domain's method its domain (a rename everything: the object keeps its old name); a
pool's, network's or volume's the networks and pools; a connection method that makes a
domain (define, create) that domain; any other connection method everything. A method
not named here as read-only counts as a change, so nothing is missed but by a read-only
method that changes something.
"""

from __future__ import annotations

import threading

DOMAIN_READS = frozenset({
    "name", "UUID", "UUIDString", "ID", "XMLDesc", "state", "info", "isActive",
    "isPersistent", "autostart", "OSType", "maxMemory", "maxVcpus", "hasManagedSaveImage",
    "isUpdated", "metadata", "blockInfo", "connect", "hostname", "vcpus", "vcpusFlags",
    "memoryStats", "controlInfo", "jobInfo", "getCPUStats", "schedulerType",
    "schedulerParameters", "listAllSnapshots", "snapshotNum", "snapshotListNames",
    "hasCurrentSnapshot", "blockStats", "interfaceStats", "c_pointer",
})
CONN_READS = frozenset({
    "lookupByName", "lookupByUUID", "lookupByUUIDString", "lookupByID", "listAllDomains",
    "listDomainsID", "listDefinedDomains", "numOfDomains", "numOfDefinedDomains",
    "listAllNetworks", "networkLookupByName", "networkLookupByUUID",
    "networkLookupByUUIDString", "listNetworks", "listDefinedNetworks",
    "listAllStoragePools", "storagePoolLookupByName", "storagePoolLookupByUUID",
    "storagePoolLookupByUUIDString", "listStoragePools", "listDefinedStoragePools",
    "storageVolLookupByPath", "storageVolLookupByKey", "getCapabilities",
    "getDomainCapabilities", "getVersion", "getLibVersion", "getHostname", "getURI",
    "getType", "getInfo", "getSysinfo", "getFreeMemory", "getMaxVcpus",
    "getCellsFreeMemory", "isAlive", "isSecure", "isEncrypted", "listAllDevices",
    "nodeDeviceLookupByName", "listDevices", "numOfDevices", "c_pointer", "close",
})
OBJECT_READS = frozenset({  # storage pools, networks and volumes
    "name", "UUID", "UUIDString", "XMLDesc", "info", "isActive", "isPersistent",
    "autostart", "listAllVolumes", "storageVolLookupByName", "listVolumes", "numOfVolumes",
    "connect", "bridgeName", "DHCPLeases", "key", "path", "storagePoolLookupByVolume",
    "c_pointer",
})
# Connection methods that make (or start) one domain, which they return.
CONN_MAKES_DOMAIN = frozenset({"defineXML", "defineXMLFlags", "createXML",
                               "createXMLWithFiles"})


class Changes:
    """The marks of one session since its last commit (shared by its threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._domains: set[str] = set()
        self._everything = False
        self._objects = False

    def domain(self, name: str) -> None:
        with self._lock:
            self._domains.add(name)

    def objects(self) -> None:
        with self._lock:
            self._objects = True

    def everything(self) -> None:
        with self._lock:
            self._everything = self._objects = True

    def take_domains(self) -> set[str] | None:
        """The domains marked since the last take (None: every domain), and start
        afresh: a mark made from now on goes to the next take."""
        with self._lock:
            taken = None if self._everything else self._domains
            self._domains, self._everything = set(), False
        return taken

    def take_objects(self) -> bool:
        """Whether networks or pools were marked since the last take; start afresh."""
        with self._lock:
            taken, self._objects = self._objects, False
        return taken
