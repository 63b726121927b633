/*
 * vixDiskLib.h -- the C ABI of VMware's Virtual Disk Development Kit (VDDK)
 * 6.5 to 8.0, as documented in VMware's public "VixDiskLib API reference"
 * and the VDDK programming guide.  Written for safekeeping; it is not
 * VMware's header.  Only what safekeeping uses or must lay out is declared.
 *
 * Layout facts (x86-64 Linux, LP64), checked by tests in vddk-sys:
 *   VixDiskLibConnectParams  128 bytes
 *   VixDiskLibInfo            64 bytes (56 before VDDK 7.0: no sector sizes)
 *   VixDiskLibCreateParams    32 bytes (24 before VDDK 7.0: no sector sizes)
 */
#ifndef SAFEKEEPING_VIXDISKLIB_H
#define SAFEKEEPING_VIXDISKLIB_H

#include <stdarg.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* VDDK's Bool is a char: 0 false, anything else true. */
typedef char Bool;

/* ---- Errors ------------------------------------------------------------ */

/* A VixError is 64 bits; the low 16 bits hold one of the codes below. */
typedef uint64_t VixError;
#define VIX_ERROR_CODE(err) ((err) & 0xFFFF)

enum {
   VIX_OK                                  = 0,

   /* General errors */
   VIX_E_FAIL                              = 1,
   VIX_E_OUT_OF_MEMORY                     = 2,
   VIX_E_INVALID_ARG                       = 3,
   VIX_E_FILE_NOT_FOUND                    = 4,
   VIX_E_OBJECT_IS_BUSY                    = 5,
   VIX_E_NOT_SUPPORTED                     = 6,
   VIX_E_FILE_ERROR                        = 7,
   VIX_E_DISK_FULL                         = 8,
   VIX_E_INCORRECT_FILE_TYPE               = 9,
   VIX_E_CANCELLED                         = 10,
   VIX_E_FILE_READ_ONLY                    = 11,
   VIX_E_FILE_ALREADY_EXISTS               = 12,
   VIX_E_FILE_ACCESS_ERROR                 = 13,
   VIX_E_REQUIRES_LARGE_FILES              = 14,
   VIX_E_FILE_ALREADY_LOCKED               = 15,
   VIX_E_NOT_SUPPORTED_ON_REMOTE_OBJECT    = 20,
   VIX_E_FILE_TOO_BIG                      = 21,
   VIX_E_FILE_NAME_INVALID                 = 22,
   VIX_E_ALREADY_EXISTS                    = 23,
   VIX_E_BUFFER_TOOSMALL                   = 24,
   VIX_E_OBJECT_NOT_FOUND                  = 25,
   VIX_E_HOST_NOT_CONNECTED                = 26,
   VIX_E_INVALID_UTF8_STRING               = 27,
   VIX_E_OPERATION_ALREADY_IN_PROGRESS     = 31,
   VIX_E_UNFINISHED_JOB                    = 29,
   VIX_E_NEED_KEY                          = 30,
   VIX_E_LICENSE                           = 32,
   VIX_E_VM_HOST_DISCONNECTED              = 34,
   VIX_E_AUTHENTICATION_FAIL               = 35,
   VIX_E_HOST_CONNECTION_LOST              = 36,
   VIX_E_DUPLICATE_NAME                    = 41,

   /* Handle errors */
   VIX_E_INVALID_HANDLE                    = 1000,
   VIX_E_NOT_SUPPORTED_ON_HANDLE_TYPE      = 1001,
   VIX_E_TOO_MANY_HANDLES                  = 1002,

   /* XML and property errors */
   VIX_E_NOT_FOUND                         = 2000,
   VIX_E_TYPE_MISMATCH                     = 2001,
   VIX_E_INVALID_XML                       = 2002,

   /* VM errors */
   VIX_E_VM_NOT_FOUND                      = 4000,
   VIX_E_NOT_SUPPORTED_FOR_VM_VERSION      = 4001,
   VIX_E_CANNOT_READ_VM_CONFIG             = 4002,

   /* Disk errors */
   VIX_E_DISK_INVAL                        = 16000,
   VIX_E_DISK_NOINIT                       = 16001,
   VIX_E_DISK_NOIO                         = 16002,
   VIX_E_DISK_PARTIALCHAIN                 = 16003,
   VIX_E_DISK_NEEDSREPAIR                  = 16006,
   VIX_E_DISK_OUTOFRANGE                   = 16007,
   VIX_E_DISK_CID_MISMATCH                 = 16008,
   VIX_E_DISK_CANTSHRINK                   = 16009,
   VIX_E_DISK_PARTMISMATCH                 = 16010,
   VIX_E_DISK_UNSUPPORTEDDISKVERSION       = 16011,
   VIX_E_DISK_OPENPARENT                   = 16012,
   VIX_E_DISK_NOTSUPPORTED                 = 16013,
   VIX_E_DISK_NEEDKEY                      = 16014,
   VIX_E_DISK_INVALIDPARTITIONTABLE        = 16018,
   VIX_E_DISK_TOOMANYOPENFILES             = 16027,
   VIX_E_DISK_TOOMANYREDO                  = 16028,
   VIX_E_DISK_INVALIDCHAIN                 = 16030,
   VIX_E_DISK_SUBSYSTEM_INIT_FAIL          = 16053,
   VIX_E_DISK_INVALID_CONNECTION           = 16054,
   VIX_E_DISK_INVALIDDISK                  = 16063,
   VIX_E_DISK_CAPACITY_MISMATCH            = 16067,

   /* Asynchronous operation accepted; completion is reported later. */
   VIX_ASYNC                               = 25000
};

/* ---- Versions, flags and limits ---------------------------------------- */

#define VIXDISKLIB_VERSION_MAJOR 8
#define VIXDISKLIB_VERSION_MINOR 0

#define VIXDISKLIB_SECTOR_SIZE 512

#define VIXDISKLIB_FLAG_OPEN_UNBUFFERED         (1 << 0)
#define VIXDISKLIB_FLAG_OPEN_SINGLE_LINK        (1 << 1)
#define VIXDISKLIB_FLAG_OPEN_READ_ONLY          (1 << 2)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_ZLIB   (1 << 4)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_FASTLZ (1 << 5)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_SKIPZ  (1 << 6)

/* QueryAllocatedBlocks: chunk size in sectors is at least this ... */
#define VIXDISKLIB_MIN_CHUNK_SIZE 128
/* ... and one call covers at most this many chunks. */
#define VIXDISKLIB_MAX_CHUNK_NUMBER (512 * 1024)

/* Virtual hardware versions for VixDiskLibCreateParams.hwVersion. */
#define VIXDISKLIB_HWVERSION_WORKSTATION_4 3
#define VIXDISKLIB_HWVERSION_WORKSTATION_5 4
#define VIXDISKLIB_HWVERSION_WORKSTATION_6 6
#define VIXDISKLIB_HWVERSION_ESX30 4
#define VIXDISKLIB_HWVERSION_ESX4X 7
#define VIXDISKLIB_HWVERSION_ESX50 8
#define VIXDISKLIB_HWVERSION_ESX51 9
#define VIXDISKLIB_HWVERSION_ESX55 10
#define VIXDISKLIB_HWVERSION_ESX60 11
#define VIXDISKLIB_HWVERSION_ESX65 13

/* ---- Opaque handles ---------------------------------------------------- */

typedef struct VixDiskLibConnectParam *VixDiskLibConnection;
typedef struct VixDiskLibHandleStruct *VixDiskLibHandle;
typedef uint64_t VixDiskLibSectorType;

/* ---- Callbacks --------------------------------------------------------- */

/* Log, warning and panic sink given to InitEx: printf format plus va_list. */
typedef void VixDiskLibGenericLogFunc(const char *fmt, va_list args);

/* Completion of ReadAsync/WriteAsync; may run inside the call or on
 * another VDDK thread. */
typedef void (*VixDiskLibCompletionCB)(void *cbData, VixError result);

/* Progress of long operations such as Create; return FALSE to cancel. */
typedef Bool (*VixDiskLibProgressFunc)(void *progressData, int percentCompleted);

/* ---- Connection parameters --------------------------------------------- */

typedef enum {
   VIXDISKLIB_CRED_UID       = 1, /* user name and password */
   VIXDISKLIB_CRED_SESSIONID = 2, /* vim session cookie */
   VIXDISKLIB_CRED_TICKETID  = 3, /* internal */
   VIXDISKLIB_CRED_SSPI      = 4, /* Windows only */
   VIXDISKLIB_CRED_UNKNOWN   = 256
} VixDiskLibCredType;

typedef enum {
   VIXDISKLIB_SPEC_VMX             = 0, /* vmxSpec names a VM: "moref=vm-N" */
   VIXDISKLIB_SPEC_VSTORAGE_OBJECT = 1, /* spec.vStorageObjSpec names an FCD */
   VIXDISKLIB_SPEC_UNKNOWN         = 2
} VixDiskLibSpecType;

typedef struct {
   char *userName;
   char *password;
} VixDiskLibUidPasswdCreds;

typedef struct {
   char *cookie;
   char *userName;
   char *key;
} VixDiskLibSessionIdCreds;

/* A first class disk (improved virtual disk): its id, the managed object
 * reference of its datastore and optionally a snapshot id. */
typedef struct {
   char *id;
   char *datastoreMoRef;
   char *ssId;
} VixDiskLibVStorageObjectSpec;

/* Opaque state the library keeps inside a VixDiskLibConnectParams that it
 * allocated (VixDiskLib_AllocateConnectParams); internal use only. */
typedef struct VixDiskLibConnectParamsState VixDiskLibConnectParamsState;

typedef struct VixDiskLibConnectParams {
   char *vmxSpec;
   char *serverName;
   char *thumbPrint;
   long  privateUse;
   VixDiskLibCredType credType;
   union {
      VixDiskLibUidPasswdCreds uid;
      VixDiskLibSessionIdCreds sessionId;
      void *ticketId;
   } creds;
   uint32_t port;        /* HTTPS port of vCenter/ESXi (0: 443) */
   uint32_t nfcHostPort; /* NFC port of the ESXi hosts (0: 902) */
   char *vimApiVer;      /* not used */
   /* The library's own: AllocateConnectParams (6.7+) fills these and
    * ConnectEx, PrepareForAccess, EndAccess and FreeConnectParams use them.
    * Callers must never write them (nor the whole struct). */
   char reserved[8];
   VixDiskLibConnectParamsState *state;
   union {
      VixDiskLibVStorageObjectSpec vStorageObjSpec;
   } spec;
   VixDiskLibSpecType specType;
} VixDiskLibConnectParams;

/* ---- Disk description -------------------------------------------------- */

typedef struct {
   uint32_t cylinders;
   uint32_t heads;
   uint32_t sectors;
} VixDiskLibGeometry;

typedef enum {
   VIXDISKLIB_ADAPTER_IDE           = 1,
   VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC = 2,
   VIXDISKLIB_ADAPTER_SCSI_LSILOGIC = 3,
   VIXDISKLIB_ADAPTER_UNKNOWN       = 256
} VixDiskLibAdapterType;

typedef enum {
   VIXDISKLIB_DISK_MONOLITHIC_SPARSE = 1,
   VIXDISKLIB_DISK_MONOLITHIC_FLAT   = 2,
   VIXDISKLIB_DISK_SPLIT_SPARSE      = 3,
   VIXDISKLIB_DISK_SPLIT_FLAT        = 4,
   VIXDISKLIB_DISK_VMFS_FLAT         = 5,
   VIXDISKLIB_DISK_STREAM_OPTIMIZED  = 6,
   VIXDISKLIB_DISK_VMFS_THIN         = 7,
   VIXDISKLIB_DISK_VMFS_SPARSE       = 8,
   VIXDISKLIB_DISK_UNKNOWN           = 256
} VixDiskLibDiskType;

typedef uint32_t VixDiskLibSectorSize;

/* Returned by GetInfo, freed by FreeInfo.  The two sector sizes exist from
 * VDDK 7.0 on; older libraries allocate only the first 56 bytes. */
typedef struct VixDiskLibInfo {
   VixDiskLibGeometry biosGeo;
   VixDiskLibGeometry physGeo;
   VixDiskLibSectorType capacity;
   VixDiskLibAdapterType adapterType;
   int numLinks;
   char *parentFileNameHint;
   char *uuid;
   VixDiskLibSectorSize logicalSectorSize;
   VixDiskLibSectorSize physicalSectorSize;
} VixDiskLibInfo;

/* Parameters of Create.  Sector sizes exist from VDDK 7.0 on. */
typedef struct {
   VixDiskLibDiskType diskType;
   VixDiskLibAdapterType adapterType;
   uint16_t hwVersion;
   VixDiskLibSectorType capacity;
   VixDiskLibSectorSize logicalSectorSize;
   VixDiskLibSectorSize physicalSectorSize;
} VixDiskLibCreateParams;

/* One allocated region, in sectors. */
typedef struct {
   VixDiskLibSectorType offset;
   VixDiskLibSectorType length;
} VixDiskLibBlock;

/* Returned by QueryAllocatedBlocks, freed by FreeBlockList. */
typedef struct {
   uint32_t numBlocks;
   VixDiskLibBlock blocks[1];
} VixDiskLibBlockList;

/* ---- Functions --------------------------------------------------------- */

VixError VixDiskLib_InitEx(uint32_t majorVersion, uint32_t minorVersion,
                           VixDiskLibGenericLogFunc *log,
                           VixDiskLibGenericLogFunc *warn,
                           VixDiskLibGenericLogFunc *panic,
                           const char *libDir, const char *configFile);
void VixDiskLib_Exit(void);
const char *VixDiskLib_ListTransportModes(void);

VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams(void);
void VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *connectParams);

VixError VixDiskLib_PrepareForAccess(const VixDiskLibConnectParams *connectParams,
                                     const char *identity);
VixError VixDiskLib_EndAccess(const VixDiskLibConnectParams *connectParams,
                              const char *identity);

/* Removes what killed or crashed programs left behind for this connection
 * (hot-added disks, mounts, temporary files); reports how many
 * items were cleaned up and how many remain. */
VixError VixDiskLib_Cleanup(const VixDiskLibConnectParams *connectParams,
                            uint32_t *numCleanedUp, uint32_t *numRemaining);

VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *connectParams,
                              Bool readOnly, const char *snapshotRef,
                              const char *transportModes,
                              VixDiskLibConnection *connection);
VixError VixDiskLib_Disconnect(VixDiskLibConnection connection);

VixError VixDiskLib_Create(const VixDiskLibConnection connection,
                           const char *path,
                           const VixDiskLibCreateParams *createParams,
                           VixDiskLibProgressFunc progressFunc,
                           void *progressCallbackData);

VixError VixDiskLib_Open(const VixDiskLibConnection connection,
                         const char *path, uint32_t flags,
                         VixDiskLibHandle *diskHandle);
VixError VixDiskLib_Close(VixDiskLibHandle diskHandle);
const char *VixDiskLib_GetTransportMode(VixDiskLibHandle diskHandle);

VixError VixDiskLib_GetInfo(VixDiskLibHandle diskHandle, VixDiskLibInfo **info);
void VixDiskLib_FreeInfo(VixDiskLibInfo *info);

VixError VixDiskLib_Read(VixDiskLibHandle diskHandle,
                         VixDiskLibSectorType startSector,
                         VixDiskLibSectorType numSectors, uint8_t *readBuffer);
VixError VixDiskLib_Write(VixDiskLibHandle diskHandle,
                          VixDiskLibSectorType startSector,
                          VixDiskLibSectorType numSectors,
                          const uint8_t *writeBuffer);
VixError VixDiskLib_ReadAsync(VixDiskLibHandle diskHandle,
                              VixDiskLibSectorType startSector,
                              VixDiskLibSectorType numSectors,
                              uint8_t *readBuffer,
                              VixDiskLibCompletionCB callback, void *cbData);
VixError VixDiskLib_WriteAsync(VixDiskLibHandle diskHandle,
                               VixDiskLibSectorType startSector,
                               VixDiskLibSectorType numSectors,
                               const uint8_t *writeBuffer,
                               VixDiskLibCompletionCB callback, void *cbData);
VixError VixDiskLib_Wait(VixDiskLibHandle diskHandle);
VixError VixDiskLib_Flush(VixDiskLibHandle diskHandle);

VixError VixDiskLib_QueryAllocatedBlocks(VixDiskLibHandle diskHandle,
                                         VixDiskLibSectorType startSector,
                                         VixDiskLibSectorType numSectors,
                                         VixDiskLibSectorType chunkSize,
                                         VixDiskLibBlockList **blockList);
VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *blockList);

char *VixDiskLib_GetErrorText(VixError err, const char *locale);
void VixDiskLib_FreeErrorText(char *errMsg);

#ifdef __cplusplus
}
#endif

#endif /* SAFEKEEPING_VIXDISKLIB_H */
